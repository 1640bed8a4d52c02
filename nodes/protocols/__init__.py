"""Protocol bases that several node types share (an MQTT session, Modbus polling); no node type is declared here."""
