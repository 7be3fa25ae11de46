"""What the tests stand on, as pytest plugins that tests/conftest.py loads (`pytest_plugins`): one module per kind
of real thing the suite starts or talks to. Fixtures come from here by name; helpers are imported from the module
that owns them, e.g. `from tests.support.postgres import SourceDb`."""
