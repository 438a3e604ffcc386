"""`ucadi demo`: the whole federation on one machine, as real processes on 127.0.0.1."""
