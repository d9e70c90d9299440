# smartbms host variant: frozen firmware (see manifest.py beside this file).
FROZEN_MANIFEST ?= $(VARIANT_DIR)/manifest.py
