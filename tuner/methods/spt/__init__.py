"""Everything SPT (He et al., ICCV 2023): allocation, the sensitivity pass, the report and the
two registered methods. Nothing outside this package knows SPT exists: the trainer and the
sweep reach it only through the ``Method.prepare``/``report`` hooks."""
