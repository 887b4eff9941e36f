"""Stream trainer: consumes the event log, keeps T2Diff learning, publishes versions to the registry and Milvus.

Modules: ``settings`` (config section), ``state`` (user histories, replay buffer, dedup -- everything that
must survive a restart), ``prequential`` (score-then-train metrics + per-event score log), ``growth`` (cold
items), ``publish`` (registry + index versions, latency accounting), ``loop`` (the trainer), ``cli``, ``bench``.
"""
