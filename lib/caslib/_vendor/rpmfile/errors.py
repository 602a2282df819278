"""
Created on Jan 10, 2014

@author: sean
"""


class RPMError(Exception):
    pass
