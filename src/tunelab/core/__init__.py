"""Below everything: the error type, the user cache, label text, known-bad dependency sets, memory handling and the process launcher."""
