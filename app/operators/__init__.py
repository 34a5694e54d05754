"""The operator plane: the platform that runs keyhouse, calling with operator keys (``kho_…``).

It builds on organizations (creating and suspending them) and usage (billing figures from the
rollups); none of them imports it.
"""
