"""modules/sd_models.py (1.10.1): only ``model_data``, whose ``sd_model`` attribute is the loaded model or None.

(``shared.sd_model`` is a property that loads a model on first access; ``model_data.sd_model`` never does.)
"""


class SdModelData:
    def __init__(self):
        self.sd_model = None
        self.was_loaded_at_least_once = False


model_data = SdModelData()
