"""A run directory and the systems scored in it: every path of a run, its start/resume rules,
loading, merging and sharing its trained weights."""

from tunelab.runs.run_dir import (
    EvalDir,
    RunDir,
    StudyFiles,
    SweepDir,
    load_run_model,
    ratings_file,
    read_config,
    report_html,
    scoring_run_model,
    write_config,
)
from tunelab.runs.system import System
from tunelab.runs.tune_dir import TuneDir

__all__ = ["EvalDir", "RunDir", "StudyFiles", "SweepDir", "System", "TuneDir", "load_run_model",
           "ratings_file", "read_config", "report_html", "scoring_run_model",
           "write_config"]
