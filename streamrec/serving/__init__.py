"""What may be served, and the one read step every list passes through.

- :mod:`streamrec.serving.availability`: items hidden or expiring, their tags, users' exclusions
  (followed in the worker's memory; no Kafka, no Redis);
- :mod:`streamrec.serving.similar`: an item's similar items from item-kNN's public state;
- :mod:`streamrec.serving.read_step`: the Redis Function that filters every read, and its call;
- :mod:`streamrec.serving.list_kinds`: every kind of served list, where it is stored and how it is read.

The Redis layout and the client are in :mod:`streamrec.store`.
"""
