"""Models: the offline base models (``basemodels``), one chat template per model (``chat_template``), what a request
may load (``loadable``), LoRA adapter checks, llama.cpp's tools and model server processes (``server_process``)."""
