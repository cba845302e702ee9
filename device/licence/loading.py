# How a licence reaches the terminal (SPEC 8.5): the host's `licence` message {"lic": COSE
# bytes} and the console's `licence load PL1:...`; and `licence show`. Refusals are counted: a
# licence the terminal already has (the host pushes the current one after every hello) as
# `licence_not_newer`, anything else as drop_licence_<code>.
from device.console.lines import reply_error, reply_ok
from device.licence.reading import LicenceError


class LicenceLoader:
    def __init__(self, licence, metrics, log, on_installed=None):
        """licence: the InstalledLicence; on_installed(): after a licence was installed (the
        idle screen redraws)."""
        self.licence = licence
        self.metrics = metrics
        self.log = log
        self.on_installed = on_installed

    def _install(self, how, fn, arg):
        try:
            lic = fn(arg)
        except LicenceError as e:
            if e.code == "rollback":
                self.metrics.inc("licence_not_newer")
            else:
                self.metrics.inc("drop_licence_" + e.code)
                self.log("licence from %s refused: %s" % (how, e.message))
            raise
        st, days = self.licence.state()
        self.metrics.inc("licence_installed")
        self.log("installed licence ver %d plan %s exp %d grace %d from %s: %s"
                 % (lic["ver"], lic["plan"], lic["exp"], lic["grace"], how, st))
        if self.on_installed is not None:
            self.on_installed()
        return lic, st, days

    def from_host(self, body, seq):
        """The `licence` downlink handler (the body passed the schema)."""
        try:
            self._install("host", self.licence.install, body["lic"])
        except LicenceError:
            pass

    def console_load(self, arg):
        """`licence load PL1:...`"""
        if not arg.strip():
            return reply_error("bad_argument", "usage: licence load PL1:...")
        try:
            lic, st, days = self._install("console", self.licence.install_text, arg)
        except LicenceError as e:
            return reply_error(e.code, e.message)
        return reply_ok(ver=lic["ver"], plan=lic["plan"], exp=lic["exp"], grace=lic["grace"],
                        st=st, days=days)

    def console_show(self, arg):
        """`licence show`"""
        return reply_ok(**self.licence.show())
