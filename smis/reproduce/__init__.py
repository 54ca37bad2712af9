"""Run the numbered notebooks headlessly with papermill, one profile of parameters at a time
(`python -m smis.reproduce --profile demo`; its help: smis.reproduce.cli).

One module a concern, each importing only those above it in this list:
- `profiles`: the profiles as data, and each notebook's declaration of the inputs it reads (NOTEBOOK_INPUTS);
- `parameters`: a notebook's parameters cell (names, defaults, types, SMOKE) and the `--set` items;
- `plan`: a run's notebooks and their final parameters (plan_profile), and the GPU-hour estimates read from
  benchmarks/results;
- `preflight`: every input of a planned run and its state (`--check`);
- `runner`: the notebooks executed in order, their timings and REPORT.md;
- `cli`: the command line (`__main__` runs it).
"""
