"""Delivery (R17): label data per device, delivery lists per shipment, and the clinician's signed acceptance."""
