"""Research tooling: reference corpora (`datasets`), `metrics`, `evaluation` of one run
against its references, `experiments` over systems x items, `tuning` sweeps,
`baselines` (other systems) and `isolation` (foreign native code in a child process)."""
