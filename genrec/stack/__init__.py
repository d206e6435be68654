"""Training and evaluating the whole stack: `genrec pipeline train --config` (config.py, train.py) and the
`genrec pipeline` commands (cli.py). It sits above genrec.pipeline (the stage objects, which import no trainer)
and the trainers it calls."""
