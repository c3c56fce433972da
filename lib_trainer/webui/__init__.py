"""Training inside the AUTOMATIC1111 WebUI: the only package that imports the WebUI's `modules`
(with the entry points in scripts/). Importing its modules outside the WebUI raises
ImportError; nothing here is imported by the rest of the library.

- model.py: the loaded checkpoint lent to the trainer (`WebUIBundle`) and given back as it
  was: clip skip, --medvram/--lowvram hooks;
- lora_networks.py: the built-in Lora extension: its merged networks out of the way while
  training, and every saved file read back through its loader;
- sampling.py: sample images through the WebUI's own txt2img;
- service.py: the job service (queue lock, `shared.state`, Interrupt), defaults, folders and
  the memory estimate of the loaded model;
- taggers.py: deepbooru and BLIP through the WebUI's models, registered into the tagger registry;
- xyz_axes.py: the LoRA file and weight axes added to the WebUI's own X/Y/Z plot script.
"""
