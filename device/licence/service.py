# The service licence on the terminal (SPEC 8.5): wiring only. The licence and its clock
# (installed.py), what it changes at the till (till_rules.py), how licences arrive and what the
# console shows (loading.py).
import asyncio

from device.licence.installed import InstalledLicence
from device.licence.loading import LicenceLoader
from device.licence.till_rules import LicenceRules

# The licence clock is read at least this often, so that a clock set back while the terminal
# sits on a sale screen is still caught from the last reading (device/licence/clock.py).
OBSERVE_S = 60


def install(agent):
    licence = InstalledLicence(agent.fs, agent.data_dir, agent.trust, agent.shop["device_id"],
                               agent.clock, agent.metrics, agent.log).open()
    rules = LicenceRules(licence, agent.metrics)
    loader = LicenceLoader(licence, agent.metrics, agent.log, on_installed=agent.clerk.touch)
    agent.till.add_gate(rules.refusal)
    agent.clerk.on_key("idle", rules.idle_key)
    agent.clerk.add_idle_lines(rules.idle_lines)
    agent.status.add("lic", licence.fact)
    agent.downlink.on("licence", loader.from_host)
    view = agent.view
    view.commands["licence_load"] = loader.console_load
    view.commands["licence_show"] = loader.console_show
    view.no_argument.append("licence_show")
    view.help.append(("licence load", "PL1:...", "installs the service licence (newer ver only)"))
    view.help.append(("licence show", "", "the licence, its state and the days left"))

    async def observe():
        while True:
            await asyncio.sleep(OBSERVE_S)
            licence.state()

    agent.add_task("licence", observe)
    agent.on_stop(licence.save)
