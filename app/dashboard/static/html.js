// Preact and htm, bound together: templates without a build step.
import { h, render } from "./vendor/preact-10.27.2/preact.module.js";
import htm from "./vendor/htm-3.1.1/htm.module.js";

export const html = htm.bind(h);
export { render };
export {
  useCallback,
  useEffect,
  useMemo,
  useRef,
  useState,
} from "./vendor/preact-10.27.2/hooks.module.js";
