"""architecture mechanisms of the ICLR 2020 oracle (see DESIGN.md)."""
