"""What goes into files: kohya/LyCORIS key names, ss_* metadata, safetensors writing."""
