"""NMEA 0183 radar target output (TTM, TLL) of marine and ground ARPA radars."""
