"""The learners: one meta-iteration's flow for RL families (:mod:`.reinforcement`) and for
supervised ones (:mod:`.supervised`), each built from an algorithm
(:mod:`maml_rl.algorithms`) and a meta-update (:mod:`maml_rl.meta_updates`)."""
