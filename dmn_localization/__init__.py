"""dmn_localization: camera localization against a learned view-embedding map (DMN)."""

__version__ = '0.1.0'
