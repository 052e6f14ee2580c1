from appliance.cli import entry

entry()
