"""Private helpers shared by every room of camlens: files, optional imports, progress, devices.

Nothing here imports from the rest of camlens except :mod:`camlens.errors`.
"""
