"""An S3-compatible server for cairn's tests: moto's, on 127.0.0.1 and a free port.

Usage: s3_server.py PID. Prints the port on its first line once it serves, then runs until
process PID (the test binary that started it) is gone, however that ended: a failed test
never leaves it behind. `./run setup` installs moto (`pip install 'moto[server]'`) if it is
missing.
"""

import os
import sys
import time

from moto.server import ThreadedMotoServer


owner = int(sys.argv[1])
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
# Started by `owner`: once it is gone, this process has another parent.
while os.getppid() == owner:
    time.sleep(0.2)
server.stop()
