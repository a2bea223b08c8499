"""Everything that turns a workspace and a cursor into a prompt; no model code here."""
