# The one place the firmware version is written. `make firmware` copies it into the
# ESP-IDF app descriptor, so an OTA image can be identified before it is activated.
VERSION = "0.1.0"
PROJECT = "smartbms"
