# The store services the host runs (SPEC 8), in the order they see each charge: the classes
# `python -m host_sim serve` and the test rigs give Host(..., services=SERVICES). Each is a
# host_sim/service.py service over the host's own database.
from host_sim.bookings import Bookings
from host_sim.licences import Licences
from host_sim.members import Members
from host_sim.refunds import Refunds
from host_sim.vip import Vip

SERVICES = (Members, Vip, Refunds, Bookings, Licences)
