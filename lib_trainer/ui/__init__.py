"""The "LoRA Train" UI in Gradio: Train, Dataset, Tags and Compare sub-tabs over a job service.

Gradio compatibility: the same code runs on Gradio 3.41.2 (AUTOMATIC1111 WebUI 1.10, the
standalone server, CI) and Gradio 4.x (Forge). It uses only APIs present in both:
`gr.Blocks`/`gr.Tab`/`gr.Row`/`gr.Accordion`, components with `info=`, `gr.update()`,
`gr.State`, `gr.LinePlot` fed a DataFrame, `Gallery.select` and `Tab.select`, and polling by a script that clicks a Refresh
button (javascript/lib_trainer.js; Gradio 3's `every=` loop re-sends its first inputs and
loses the session's `gr.State`, and `gr.Timer` is 4.x only). The few differences (queue
settings, JavaScript on events, uploaded file values) are in compat.py.

The UI never runs training itself: it calls a `lib_trainer.jobs.TrainService`, so the
standalone server (a background thread) and the WebUI (its job queue) can differ in how
jobs run without any change here.
"""
from .app import build_tab, launch_standalone, standalone_blocks

__all__ = ["build_tab", "launch_standalone", "standalone_blocks"]
