"""Hand-written fakes of the peers the adapters talk to, served on loopback."""
