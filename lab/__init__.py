"""The lab: an embedded multi-node cluster in network namespaces (docs/architecture.md, "The lab")."""
