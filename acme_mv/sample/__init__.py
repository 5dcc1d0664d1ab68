"""The ACME sample source: schema, bulk history, live workload simulator."""
