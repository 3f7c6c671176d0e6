"""The live channel between a worker's page and the deployment: Mephisto's router websocket protocol.

- :mod:`.protocol`: the packets ``mephisto-task``'s socket handler sends and expects (pure).
- :mod:`.presence`: page heartbeats in Redis, and finding the pages that fell silent.
- :mod:`.outbox`: any process (a Celery worker, beat) sends a packet to an agent's page.
- :mod:`.hub`: the web-process side: the websockets it holds, fed by Redis pub/sub, so a packet reaches
  the page wherever its websocket landed.
- :mod:`.calls`: remote procedure calls: recorded, claimed under a lease, answered, recovered.
"""
