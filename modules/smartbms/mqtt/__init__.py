# MQTT and Home Assistant (issue #14). Imported only when mqtt_enabled is on: with MQTT off
# the device keeps none of it on the heap (smartbms.mqtt.routes is the one light part).
