"""The message contracts: JSON Schemas, decoding inputs, dead letters, alert messages.

``SCHEMA_VERSION`` is the version every message carries; it lives here, with
no dependency, so that the SDK can stamp events without the validators.
"""

SCHEMA_VERSION = 1
