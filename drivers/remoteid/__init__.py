"""Remote ID receivers (ASTM F3411 / ASD-STAN, DJI DroneID) on a serial port: JSON lines or F3411 hex."""
