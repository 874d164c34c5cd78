"""The test kit every CustomDevice vendor plugin runs, on the simulated device built as its type.

- :mod:`.kit`: build the simulated device (or skip saying why), tiny models,
  scenarios run in a fresh process with ``CUSTOM_DEVICE_ROOT`` set;
- :mod:`.suite`: the shared test classes (``PluginSuite``, ``SimulatedDeviceSuite``,
  ``ConformanceSuite``) and the ``vendor`` fixture that binds them to a plugin.

A vendor's tests import them (needs pytest); see this package's README::

    # tests/conftest.py
    from hwdeploy_customdevice.testing.suite import VendorUnderTest, vendor_fixture
    vendor = vendor_fixture(VendorUnderTest(plugin="acme", kind="gcu", ...))

    # tests/test_acme.py
    from hwdeploy_customdevice.testing import suite
    class TestAcmeSimulated(suite.SimulatedDeviceSuite): pass

Nothing is imported here, so the kit's child processes stay light.
"""
