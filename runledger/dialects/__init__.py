"""HTTP rooms, one per API dialect (DESIGN.md "Flow")."""
