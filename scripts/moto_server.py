"""moto's server, with DynamoDB requests handled one at a time.

moto applies a conditional write as a check followed by a write, and rolls a cancelled
transaction back by restoring a copy of the whole table taken when the transaction began. Under
concurrent requests another write can slip in between (two conditional writes both succeed, or a
rollback erases a write that landed meanwhile), which DynamoDB never allows. The store's
concurrency tests rely on DynamoDB's atomicity, so DynamoDB requests are serialised here; other
services (SQS long polls) stay concurrent.
"""

import threading

from moto.dynamodb.responses import DynamoHandler
from moto.server import main

_dynamodb = threading.RLock()
_call_action = DynamoHandler.call_action


def _serialised_call_action(self):
    with _dynamodb:
        return _call_action(self)


DynamoHandler.call_action = _serialised_call_action

if __name__ == "__main__":
    main()
