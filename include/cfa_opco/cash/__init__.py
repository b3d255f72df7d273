"""The money side seen by a CFA's finance lead: what each échéance should bring, what was
invoiced, what the OPCOs paid, what is late and what was rejected (the cash view)."""
