"""Run by the WebUI when the extension is installed or the WebUI starts.

Installs only optional packages that are missing, never upgrading anything, and never
touching the packages the WebUI pins (torch, torchvision, gradio, transformers, numpy,
safetensors, accelerate, pydantic). Each package only enables a feature; without it the
extension still loads and says what is unavailable.
"""
import launch

# import name -> pip requirement
OPTIONAL_PACKAGES = {
    "prodigyopt": "prodigyopt",
    "lion_pytorch": "lion-pytorch",
    "onnxruntime": "onnxruntime",
    "cv2": "opencv-python-headless<5",
    "tensorboard": "tensorboard",
}

for module_name, requirement in OPTIONAL_PACKAGES.items():
    if not launch.is_installed(module_name):
        try:
            launch.run_pip(f'install "{requirement}"', f"lib_trainer: {requirement}")
        except Exception as error:  # a failed optional install must not stop the WebUI
            print(f"lib_trainer: could not install {requirement} ({error}); the feature that needs it is off")
