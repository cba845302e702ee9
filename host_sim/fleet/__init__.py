"""The fleet simulator (issue 15): hundreds to thousands of real device agents in one process
per CPU against host workers that share the load. run.py orchestrates, shard.py is one terminal
process, terminal.py one terminal, relay.py the network a plan can cut."""
