"""The tests' broker is the package's throwaway one (see edge_agent.devtools.localbroker)."""

from edge_agent.devtools.localbroker import Mosquitto, free_port

__all__ = ["Mosquitto", "free_port"]
