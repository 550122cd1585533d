"""The lab: an embedded multi-node cluster in network namespaces (DESIGN.md, "The lab")."""
