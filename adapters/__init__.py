"""The edges: each adapter implements a port from gateway.ports and translates its library's
errors at the boundary."""
