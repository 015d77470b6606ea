"""The durable store: the implementations of the Store port (gateway.ports.Store).

SQLite (the default, one host): one connection driven by one thread (sqlite.py), the SQL
split by table group, and the schema with its ordered migrations. PostgreSQL (several nodes
sharing one database): gateway.store.postgres. factory.py picks the configured one.
Applies the Plans that gateway.plan returns, in one transaction each; never decides what to
say."""
