"""The speed suite: ``harness bench``, or ``pytest harness/speed/suite`` (outside the unit tests' ``testpaths``)."""

from harness.run.allocator import keep_freed_memory

keep_freed_memory()  # as the harness command line does: the suite times what users get
