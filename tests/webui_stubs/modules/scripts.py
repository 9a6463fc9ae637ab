"""modules/scripts.py (1.10.1): the Script base class and what the runner needs from it."""

import re


class AlwaysVisible:
    pass


scripts_data = []  # ScriptClassData(script_class, path, basedir, module)


class Script:
    name = None
    section = None
    filename = None
    args_from = None
    args_to = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    tabname = None
    infotext_fields = None
    paste_field_names = None

    def title(self):
        raise NotImplementedError()

    def ui(self, is_img2img):
        pass

    def show(self, is_img2img):
        return True

    def setup(self, p, *args): pass
    def before_component(self, component, **kwargs): pass
    def after_component(self, component, **kwargs): pass  # kwargs: the component's constructor kwargs
    def before_process(self, p, *args): pass
    def process(self, p, *args): pass
    def process_batch(self, p, *args, **kwargs): pass
    def process_before_every_sampling(self, p, *args, **kwargs): pass
    def before_hr(self, p, *args): pass
    def postprocess(self, p, processed, *args): pass

    def elem_id(self, item_id):
        need_tabname = self.show(True) == self.show(False)
        tabkind = "img2img" if self.is_img2img else "txt2img"
        tabname = f"{tabkind}_" if need_tabname else ""
        title = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", self.title().lower()))
        return f"script_{tabname}{title}_{item_id}"
