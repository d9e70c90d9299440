# smartbms: keeps a LiFePO4 battery healthy by switching its charger from live BMS data.
from smartbms.version import VERSION

__version__ = VERSION
