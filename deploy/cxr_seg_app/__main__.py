"""``python deploy/cxr_seg_app -i ... -o ... -m ...`` runs the app, as the SDK's packager expects."""

from app import CXRSegApp

if __name__ == "__main__":
    CXRSegApp().run()
