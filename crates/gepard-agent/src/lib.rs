//! Capability and dataset bundle formats, agent rollouts and reward recipes: the adapter between GEPA and a capability agent.
