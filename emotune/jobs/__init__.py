"""Jobs: every long operation is a job in the store (``store``), run by one owner at a time (``runner``, ``leases``),
served over gRPC (``servicer``) and followed from terminals (``follow``)."""
