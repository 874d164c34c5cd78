"""The plugin contract: the hooks (:mod:`.hookspecs`), the typed records plugins return (:mod:`.records`,
:mod:`.model`, :mod:`.predictor`, :mod:`.receipt`) and the manager that loads plugins and enforces every
hook's contract (:mod:`.manager`). Everything a plugin hands to hwdeploy passes through here."""
