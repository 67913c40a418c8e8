"""The Python half of examples/python_peer.rs.

Serves a job queue through a BaseManager (the pattern of the Python docs'
"Using a remote manager"), prints the port, then produces five jobs and a
None sentinel through its own manager connection. The Rust example consumes
them. Exits when its stdin closes.
"""

import queue
import sys
import threading
from multiprocessing.managers import BaseManager

AUTHKEY = b"python-peer"
jobs = queue.Queue()


def get_jobs():
    return jobs


class JobManager(BaseManager):
    pass


JobManager.register("get_jobs", callable=get_jobs)


def main():
    server = JobManager(address=("127.0.0.1", 0), authkey=AUTHKEY).get_server()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.address[1], flush=True)

    # The producer: a manager client, as another Python process would be.
    producer = JobManager(address=server.address, authkey=AUTHKEY)
    producer.connect()
    q = producer.get_jobs()
    for i in range(5):
        q.put({"id": i, "text": f"job {i}", "weight": i * 1.5})
    q.put(None)

    sys.stdin.read()


if __name__ == "__main__":
    main()
